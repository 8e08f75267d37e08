#!/usr/bin/env bash
# `make demo`: train the 784-256-128-10 MLP on MNIST if it is cached or downloadable, otherwise on
# Fashion-MNIST (Debian's dataset-fashion-mnist, installed here with apt-get when running as root),
# on CuPy when a GPU is usable (--backend auto). Outputs: runs/demo/{model.npz,history.json,training.png}
# (replaced on every run). Ends by saying how to use the `ailib` command it installed in the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
EPOCHS=${EPOCHS:-10}

if "$PY" -m ailib fetch mnist; then
  dataset=mnist
else
  echo "demo: MNIST could not be found or downloaded; using Fashion-MNIST instead" >&2
  if ! "$PY" -m ailib fetch fashion-mnist --quiet >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "demo: installing Debian's dataset-fashion-mnist" >&2
      (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >&2 \
        || echo "demo: apt-get could not install dataset-fashion-mnist" >&2
    fi
  fi
  dataset=fashion-mnist
fi

echo "demo: training on $dataset" >&2
"$PY" -m ailib train --dataset "$dataset" --model mlp --backend auto --epochs "$EPOCHS" \
  --out runs/demo --overwrite

bin=$(dirname "$PY")
cat <<EOF

ailib is installed in the virtual environment $(dirname "$bin") (not on your PATH yet).
Use its command directly:
  $bin/ailib evaluate --model runs/demo
  $bin/ailib train --help
or activate the environment for this shell (then \`ailib\` and \`python -c "import ailib"\` work):
  source $bin/activate
EOF
