# The two set-up commands of the README. Each installs what it needs first (scripts/setup.sh).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.PHONY: setup demo test

setup:
	bash scripts/setup.sh

# The main job on embedded defaults: the stand-in host over ../shared, PALR (`llm`) on the local model.
demo: setup
	sparrow-llm demo

# The whole test suite: JUnit (the bridge, against a real redis-server) and pytest.
test: setup
	cd jvm_bridge && mvn -B -ntp package | grep -E "Tests run:|BUILD|ERROR|FAIL"
	python3 -m pytest
