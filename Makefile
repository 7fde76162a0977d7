# natsx: `make run` starts a server on 4222 (monitoring on 8222); `make test` runs the suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYX := $(wildcard natsx/_speedups/*.pyx natsx/_speedups/*.pxd natsx/_speedups/*.h)
BUILT := natsx/_speedups/.built
PORT ?= 4222
HTTP_PORT ?= 8222

.PHONY: all build run test test-pure test-compiled clean bench

all: build

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel "Cython>=3.0"
	$(BIN)/pip install -q -e '.[test]'
	touch $@

$(BUILT): $(STAMP) $(PYX) setup.py
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

build: $(BUILT)

run: build
	mkdir -p data
	$(BIN)/natsx -p $(PORT) -m $(HTTP_PORT) -js -sd ./data

# Every test of a hot-path module runs on both twins inside one pytest run (a parametrized
# fixture); the server black-box tests run once with the compiled twins and once with
# NATSX_NO_EXTENSIONS=1.
test: build
	NATSX_REQUIRE_EXTENSIONS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests
	NATSX_NO_EXTENSIONS=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests -m "server"

bench: build
	$(BIN)/natsx-bench --compare

clean:
	rm -rf build $(BUILT) natsx/_speedups/*.so natsx/_speedups/*.c
