"""PNG figures (matplotlib, Agg backend) drawn from plain arrays."""
import matplotlib

matplotlib.use("Agg")
