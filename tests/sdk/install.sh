#!/bin/sh
# Install the official SDKs that tests/sdk drives against the emulator. Idempotent.
# Usage: tests/sdk/install.sh [all|node|python]   (default: all)
#   authing-node-sdk 4.0.1 -> .sdk/node (git-ignored), with npm
#   authing 5.1.0 (PyPI)   -> the interpreter in $PYTHON (default .venv/bin/python), with pip,
#                             only when it cannot import it already (CI gets it from the
#                             `test` extra of pyproject.toml); plus `websockets`, which
#                             authing 5.1.0 imports at import time without declaring it
set -eu
what=${1:-all}
root=$(cd "$(dirname "$0")/../.." && pwd)
node_version=4.0.1
python_version=5.1.0
prefix="$root/.sdk/node"
package="$prefix/node_modules/authing-node-sdk/package.json"

if [ "$what" = python ]; then
    :
elif [ -f "$package" ] && node -e 'process.exit(require(process.argv[1]).version === process.argv[2] ? 0 : 1)' "$package" "$node_version"; then
    echo "authing-node-sdk $node_version already in $prefix"
else
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --save-exact --no-audit --no-fund --loglevel=error \
        "authing-node-sdk@$node_version"
fi

python=${PYTHON:-$root/.venv/bin/python}
if [ "$what" != node ]; then
    if "$python" -c 'import sys, importlib.metadata as m, authing; sys.exit(m.version("authing") != sys.argv[1])' "$python_version" 2>/dev/null; then
        echo "authing $python_version already installed for $python"
    else
        "$python" -m pip install --quiet "authing==$python_version" "websockets>=10"
    fi
fi
