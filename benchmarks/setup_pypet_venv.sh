#!/usr/bin/env bash
# Create benchmarks/.venv-pypet: a separate environment for pypet 0.6.1, which imports
# only with numpy < 2 (the project's own environment has numpy 2).
#
#   bash benchmarks/setup_pypet_venv.sh          # create or reuse
#   PYTHON=python3.11 bash benchmarks/setup_pypet_venv.sh
#
# Exits non-zero if pypet cannot be installed or imported; bench_storage.py then
# reports pypet as unavailable and runs the other tools.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-pypet"
PYTHON="${PYTHON:-python3}"

if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import pypet, tables" 2>/dev/null; then
    echo "pypet venv ready: $venv"
    exit 0
fi

"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install -q -U pip
"$venv/bin/python" -m pip install -q "numpy<2" "pypet==0.6.1" tables psutil
"$venv/bin/python" - <<'PY'
import numpy, pypet, tables
print(f"pypet {pypet.__version__}, numpy {numpy.__version__}, tables {tables.__version__}")
PY
echo "pypet venv ready: $venv"
