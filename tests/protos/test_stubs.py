"""Generated stubs are committed; they must match what `make protos` produces now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from keyart.v1 import ranking_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
GENERATED = ("ranking_pb2.py", "ranking_pb2.pyi", "ranking_pb2_grpc.py")


def test_stubs_are_fresh(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "protos"), f"--python_out={tmp_path}",
         f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", str(ROOT / "protos/keyart/v1/ranking.proto")],
        check=True,
    )
    for name in GENERATED:
        fresh = (tmp_path / "keyart/v1" / name).read_text()
        committed = (ROOT / "services/keyart/v1" / name).read_text()
        assert fresh == committed, f"services/keyart/v1/{name} is stale: run `make protos`"


def test_every_message_field_and_rpc_is_commented():
    """protoc keeps comments in source info; check none is missing."""
    from google.protobuf import descriptor_pb2

    out = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I", str(ROOT / "protos"), "--include_source_info",
         "--descriptor_set_out=/dev/stdout", str(ROOT / "protos/keyart/v1/ranking.proto")],
        check=True, capture_output=True,
    ).stdout
    fds = descriptor_pb2.FileDescriptorSet.FromString(out)
    (f,) = fds.file
    commented = {tuple(loc.path) for loc in f.source_code_info.location if loc.leading_comments.strip()}
    missing = []
    for i, m in enumerate(f.message_type):
        if (4, i) not in commented:
            missing.append(m.name)
        missing += [f"{m.name}.{fld.name}" for j, fld in enumerate(m.field) if (4, i, 2, j) not in commented]
    for i, e in enumerate(f.enum_type):
        if (5, i) not in commented:
            missing.append(e.name)
        missing += [f"{e.name}.{v.name}" for j, v in enumerate(e.value) if (5, i, 2, j) not in commented]
    for i, s in enumerate(f.service):
        if (6, i) not in commented:
            missing.append(s.name)
        missing += [f"{s.name}.{r.name}" for j, r in enumerate(s.method) if (6, i, 2, j) not in commented]
    assert not missing, f"uncommented: {missing}"


def test_enum_zero_values_are_unspecified():
    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        assert enum.values_by_number[0].name.endswith("_UNSPECIFIED"), enum.name
