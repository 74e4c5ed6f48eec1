#!/usr/bin/env python3
"""Check the engine contract (crates/operator/src/build/engine_contract.yaml) against
vLLM's own source: download the vLLM wheel of the contract's version from PyPI (no
GPU, no install: the wheel is a zip) and find every `evidence` string in its `file`.

Usage: engine_contract.py [--version X.Y.Z]   (make engine-contract)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

CONTRACT = Path(__file__).resolve().parents[1] / "src/build/engine_contract.yaml"
SECTIONS = ("flags", "values", "config_keys", "env", "endpoints")


def main() -> int:
    contract = yaml.safe_load(CONTRACT.read_text())
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", default=str(contract["version"]), help="vLLM version to check")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             f"vllm=={args.version}", "-d", tmp],
            check=True,
        )
        wheel = next(Path(tmp).glob("vllm-*.whl"))
        bad = 0
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            for section in SECTIONS:
                for entry in contract[section]:
                    if entry["file"] not in names:
                        print(f"MISSING FILE  vLLM {args.version}: {entry['name']}: {entry['file']}")
                        bad += 1
                        continue
                    text = z.read(entry["file"]).decode("utf-8", "replace")
                    if entry["evidence"] not in text:
                        print(f"NOT FOUND     vLLM {args.version}: {entry['name']}: "
                              f"{entry['evidence']!r} in {entry['file']}")
                        bad += 1
                    else:
                        print(f"ok            {entry['name']}")
    if bad:
        print(f"engine contract: {bad} item(s) not in vLLM {args.version}", file=sys.stderr)
        return 1
    print(f"engine contract: every flag, value, key, env var and endpoint is in vLLM {args.version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
