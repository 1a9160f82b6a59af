#!/usr/bin/env bash
# The README's pictures, from a finished demo run (`kedro run`): docs/images/demo_grid.png (the newest
# sample grid) and docs/images/dag.png (the demo DAG as kedro-viz draws it, in headless Chromium).
# Needs chromium (Debian/Ubuntu: apt-get install chromium). Usage: bash scripts/readme_images.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=docs/images
mkdir -p "$out"

grid=$(ls -d data/08_reporting/demo/sample_grid.png/*/sample_grid.png 2>/dev/null | sort | tail -1)
[ -n "$grid" ] || { echo "Error: no demo sample grid; run \`.venv/bin/kedro run\` first" >&2; exit 1; }
.venv/bin/python - "$grid" "$out/demo_grid.png" <<'PY'
import sys
from PIL import Image
img = Image.open(sys.argv[1]).convert("RGB")
img.thumbnail((720, 720))
img.save(sys.argv[2], optimize=True)
PY

browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
[ -n "$browser" ] || { echo "Error: no chromium on PATH (apt-get install chromium)" >&2; exit 1; }
[ ! -e build ] || { echo "Error: build/ exists (an earlier kedro viz build?); move it away" >&2; exit 1; }
site=$(mktemp -d)
KEDRO_DISABLE_TELEMETRY=1 .venv/bin/kedro viz build >/dev/null 2>&1
mv build "$site/"
# kedro-viz keeps its settings in localStorage: light theme, no sidebar, minimap or feature hints
cat > "$site/build/readme.html" <<'HTML'
<!doctype html><script>
localStorage.setItem("KedroViz", JSON.stringify({showFeatureHints: false, theme: "light",
  textLabels: true, visible: {sidebar: false, miniMap: false, code: false, exportModal: false}}));
location.replace("/");
</script>
HTML
port=$(.venv/bin/python -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
.venv/bin/python -m http.server "$port" --bind 127.0.0.1 --directory "$site/build" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$site"' EXIT
sleep 1
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --no-first-run --user-data-dir="$(mktemp -d)" \
  --hide-scrollbars --window-size=1000,1300 --virtual-time-budget=15000 \
  --screenshot="$PWD/$out/dag.png" "http://127.0.0.1:$port/readme.html" >/dev/null 2>&1
.venv/bin/python - "$out/dag.png" <<'PY'
import sys
from PIL import Image
Image.open(sys.argv[1]).convert("RGB").quantize(64).save(sys.argv[1], optimize=True)  # small PNG
PY
echo "wrote $out/demo_grid.png and $out/dag.png"
