"""Core plumbing: config validation, presets, atomic writes, run directories, devices."""
import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from boltzclf.core import atomic, rundir
from boltzclf.core.config import added_setting, apply_preset, deep_merge, from_mapping, require, to_dict
from boltzclf.core.device import resolve_device
from boltzclf.core.errors import BoltzclfError, ConfigError


@dataclass(frozen=True)
class Inner:
    rate: float = 1.0
    mode: Literal["a", "b"] = "a"

    def __post_init__(self):
        require(self.rate > 0, "rate", "must be positive")


@dataclass(frozen=True)
class Outer:
    name: str
    inner: Inner = field(default_factory=Inner)
    sizes: tuple[int, ...] = ()
    extra: dict[str, Inner] = field(default_factory=dict)
    maybe: int | None = None


def test_from_mapping_converts_nested_types():
    cfg = from_mapping(Outer, {"name": "x", "inner": {"rate": 2, "mode": "b"}, "sizes": [1, 2],
                               "extra": {"k": {"rate": 0.5}}, "maybe": None}, "f.yaml")
    assert cfg == Outer("x", Inner(2.0, "b"), (1, 2), {"k": Inner(0.5)}, None)
    assert isinstance(cfg.inner.rate, float)
    assert to_dict(cfg) == {"name": "x", "inner": {"rate": 2.0, "mode": "b"}, "sizes": [1, 2],
                            "extra": {"k": {"rate": 0.5, "mode": "a"}}, "maybe": None}


@pytest.mark.parametrize("data, message", [
    ({}, "f.yaml: missing required key 'name'"),
    ({"name": "x", "bogus": 1}, "f.yaml: unknown key(s) 'bogus'"),
    ({"name": 3}, "f.yaml: name: expected str, got int 3"),
    ({"name": "x", "inner": {"rate": True}}, "f.yaml: inner.rate: expected float, got bool"),
    ({"name": "x", "inner": {"mode": "c"}}, "f.yaml: inner.mode: 'c' is not one of 'a', 'b'"),
    ({"name": "x", "inner": {"rate": -1}}, "f.yaml: inner.rate: must be positive"),
    ({"name": "x", "extra": {"k": {"rate": 0}}}, "f.yaml: extra.k.rate: must be positive"),
    ({"name": "x", "sizes": [1, "two"]}, "f.yaml: sizes.1: expected int, got str"),
    ({"name": "x", "maybe": "no"}, "f.yaml: maybe: expected int, got str"),
    ({"name": "x", "inner": [1]}, "f.yaml: inner: expected a mapping, got list"),
])
def test_from_mapping_errors_name_file_and_key(data, message):
    with pytest.raises(ConfigError) as info:
        from_mapping(Outer, data, "f.yaml")
    assert message in str(info.value)


def test_presets_merge_deeply_and_unknown_presets_are_errors():
    data = {"a": {"b": 1, "c": 2}, "presets": {"p": {"a": {"c": 3}}}}
    assert apply_preset(data, "p", "w.yaml") == {"a": {"b": 1, "c": 3}}
    assert apply_preset(data, None, "w.yaml") == {"a": {"b": 1, "c": 2}}
    assert deep_merge({"x": 1}, {"y": 2}) == {"x": 1, "y": 2}
    with pytest.raises(ConfigError, match="w.yaml: unknown preset 'q' \\(defined: p\\)"):
        apply_preset(data, "q", "w.yaml")


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    path = tmp_path / "out.json"
    atomic.write_json(path, {"a": 1.0, "nan": float("nan")})
    assert path.read_text().replace(" ", "").replace("\n", "") == '{"a":1.0,"nan":null}'
    assert path.stat().st_mode & 0o044  # readable by others, as a plain open() would create it

    class Boom:
        def savefig(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic.save_figure(path, Boom())
    assert '"a": 1.0' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


def test_run_directory_resumes_same_config_and_refuses_another(tmp_path):
    out = tmp_path / "run"
    rundir.prepare(out, {"x": 1, "md": {"seed": 0, "ns": 1.0}}, seed=0, device="cpu")
    metadata = (out / "metadata.json").read_text()
    (out / "checkpoint.pt").write_text("work")
    rundir.prepare(out, {"x": 1, "md": {"seed": 0, "ns": 1.0}}, seed=0, device="cpu")
    assert (out / "metadata.json").read_text() == metadata
    with pytest.raises(BoltzclfError, match=r"different config \(md.seed: 0 -> 7; y: '<absent>' -> 2\)"):
        rundir.prepare(out, {"x": 1, "md": {"seed": 7, "ns": 1.0}, "y": 2}, seed=0, device="cpu")
    (tmp_path / "file").write_text("")
    with pytest.raises(BoltzclfError, match="not a directory"):
        rundir.prepare(tmp_path / "file", {}, seed=0, device="cpu")


@dataclass(frozen=True)
class _Dynamics:
    seed: int = 0
    ns: float = 1.0
    friction: float = added_setting(1.0)  # added later; its default does what the code did before
    thermostat: str = "baoab"  # added later, but not declared so: a run without it must not resume


@dataclass(frozen=True)
class _Workflow:
    md: _Dynamics
    windows: dict[str, _Dynamics] = field(default_factory=dict)


def test_run_written_before_a_setting_existed_resumes_only_at_a_declared_default(tmp_path):
    out = tmp_path / "run"
    new = to_dict(_Workflow(_Dynamics(), {"a": _Dynamics()}))
    old_md = {"seed": 0, "ns": 1.0, "thermostat": "baoab"}  # written before md.friction existed
    stored = {"md": old_md, "windows": {"a": old_md}}
    rundir.prepare(out, stored, seed=0, device="cpu")
    (out / "checkpoint.pt").write_text("work")
    with pytest.raises(BoltzclfError, match=r"md.friction: '<absent>' -> 1.0"):
        rundir.prepare(out, new, seed=0, device="cpu")  # without a schema nothing is assumed
    rundir.prepare(out, new, seed=0, device="cpu", schema=_Workflow)  # friction absent (twice): resumes
    assert json.loads((out / "config.json").read_text()) == stored  # the stored record is left as written
    parts = tmp_path / "parts"  # a config assembled from parts: a schema per key
    rundir.prepare(parts, {"md": old_md}, seed=0, device="cpu")
    (parts / "checkpoint.pt").write_text("work")
    rundir.prepare(parts, {"md": new["md"]}, seed=0, device="cpu", schema={"md": _Dynamics})
    with pytest.raises(BoltzclfError, match=r"different config \(md.friction: 1.0 -> 2.0\)"):
        rundir.prepare(out, to_dict(_Workflow(_Dynamics(friction=2.0), {"a": _Dynamics()})), seed=0, device="cpu",
                       schema=_Workflow)
    (out / "config.json").write_text(json.dumps({"md": {"seed": 0, "ns": 1.0}, "windows": {}}))
    with pytest.raises(BoltzclfError, match=r"md.thermostat: '<absent>' -> 'baoab'"):
        rundir.prepare(out, to_dict(_Workflow(_Dynamics())), seed=0, device="cpu", schema=_Workflow)
    (out / "config.json").write_text(json.dumps({"md": {"seed": 0, "ns": 1.0, "thermostat": "baoab", "gone": 3}}))
    with pytest.raises(BoltzclfError, match=r"md.gone: 3 -> '<absent>'"):
        rundir.prepare(out, to_dict(_Workflow(_Dynamics())), seed=0, device="cpu", schema=_Workflow)  # removed


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(BoltzclfError, match="unknown device"):
        resolve_device("tpu9")


def test_cuda_request_follows_availability():
    import torch

    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(BoltzclfError, match="CUDA is not available"):
            resolve_device("cuda")


def test_a_run_directory_whose_start_failed_takes_a_corrected_config(tmp_path):
    """Nothing but config.json and metadata.json: the start failed before any work (e.g. an
    unavailable platform), so the corrected retry may use the directory."""
    out = tmp_path / "run"
    rundir.prepare(out, {"platform": "CUDA"}, seed=0, device="cpu")
    rundir.prepare(out, {"platform": "CPU"}, seed=0, device="cpu")
    assert '"CPU"' in (out / "config.json").read_text()


def test_resuming_with_a_changed_input_file_is_refused(tmp_path):
    pdb, out = tmp_path / "mol.pdb", tmp_path / "run"
    pdb.write_text("ATOM\n")
    rundir.prepare(out, {"x": 1}, seed=0, device="cpu", inputs=(pdb,))
    (out / "chunks").mkdir()
    rundir.prepare(out, {"x": 1}, seed=0, device="cpu")  # unchanged: resumes
    pdb.write_text("ATOM\nREMARK edited\n")
    with pytest.raises(BoltzclfError, match=r"mol.pdb: changed since the run in .* started"):
        rundir.prepare(out, {"x": 1}, seed=0, device="cpu")
    pdb.unlink()
    with pytest.raises(BoltzclfError, match=r"mol.pdb: input of the run in .* is missing"):
        rundir.prepare(out, {"x": 1}, seed=0, device="cpu")


@pytest.mark.parametrize("writer, failure", [
    ("torch_save", RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")),
    ("save_npz", OSError(28, "No space left on device")),
])
def test_a_full_disk_is_named_and_leaves_the_old_file(tmp_path, monkeypatch, writer, failure):
    """A full disk as torch's zip writer and numpy report it (measured on a 64 KiB tmpfs)."""
    import numpy as np
    import torch

    path = tmp_path / ("chunk.pt" if writer == "torch_save" else "energies.npz")
    path.write_bytes(b"old contents")

    def full_disk(*args, **kwargs):
        raise failure

    monkeypatch.setattr(torch if writer == "torch_save" else np, "save" if writer == "torch_save" else "savez", full_disk)
    with pytest.raises(BoltzclfError, match=rf"{path.name}: cannot write it .*the previous version, if any, is untouched"):
        getattr(atomic, writer)(path, **({"obj": {}} if writer == "torch_save" else {"a": np.zeros(3)}))
    assert path.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_truncated_tensor_file_is_named(tmp_path):
    import torch

    from boltzclf.core.errors import CheckpointError

    path = tmp_path / "chunk_00000.pt"
    atomic.torch_save(path, {"positions": torch.zeros(100, 22, 3)})
    assert atomic.torch_load(path)["positions"].shape == (100, 22, 3)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match=r"chunk_00000.pt: unreadable"):
        atomic.torch_load(path)


def test_temporaries_of_interrupted_writes_are_not_work_and_are_removed_on_resume(tmp_path):
    """A kill between an atomic write's temporary file and its rename leaves ``.<stem>.<x>.tmp<suffix>``."""
    out = tmp_path / "run"
    rundir.prepare(out, {"x": 1}, seed=0, device="cpu")
    (out / ".metadata.abc123.tmp.json").write_text("{")  # killed while writing metadata.json
    rundir.prepare(out, {"x": 2}, seed=0, device="cpu")  # no work yet: the corrected config takes over
    (out / "chunks").mkdir()
    (out / "chunks" / ".chunk_00001.x7.tmp.pt").write_bytes(b"partial")
    (out / "chunks" / "chunk_00000.pt").write_bytes(b"done")
    rundir.prepare(out, {"x": 2}, seed=0, device="cpu")  # resume
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["chunk_00000.pt", "config.json", "metadata.json"]
