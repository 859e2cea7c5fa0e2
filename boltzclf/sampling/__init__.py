"""Samplers over learned and true energies; randomness only from a passed torch.Generator."""
