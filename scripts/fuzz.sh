#!/bin/sh
# Runs the libFuzzer target on the MQTT decoder: scripts/fuzz.sh [RUNS]
# Seeds come from the captured mosquitto sessions in Tests/MQTTCodecTests/Fixtures: each
# client and server stream becomes one seed per version-mode byte.
set -eu
cd "$(dirname "$0")/.."
RUNS="${1:-1000000}"
CORPUS=Fuzz/corpus-work
mkdir -p "$CORPUS"
python3 - "$CORPUS" <<'PY'
import glob, os, sys
out = sys.argv[1]
for path in glob.glob("Tests/MQTTCodecTests/Fixtures/*.session"):
    name = os.path.basename(path).replace(".session", "")
    conns = []
    for line in open(path):
        if line.startswith("="): conns.append([b"", b""])
        elif line[:2] in ("C ", "S "):
            conns[-1][0 if line[0] == "C" else 1] += bytes.fromhex(line[2:].strip())
    for i, (c, s) in enumerate(conns):
        mode = {"v31": 0, "v311": 1, "v5": 2}[name.split("-")[0]]
        for tag, stream in (("c", c), ("s", s)):
            if stream:
                open(os.path.join(out, f"{name}-{i}-{tag}"), "wb").write(bytes([mode]) + (c + stream if tag == "s" else stream))
PY
swift build -c release --package-path Fuzz --product MQTTCodecFuzzer \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
BIN="$(swift build -c release --package-path Fuzz --show-bin-path)/MQTTCodecFuzzer"
"$BIN" -runs="$RUNS" -max_len=4096 -print_final_stats=1 "$CORPUS"
