# All set-up goes through `install`: a fresh clone needs nothing but Python 3.10+.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned here (served from local disk on the dev machines); override for other CUDA builds.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1

.PHONY: install test demo lint bench reproduce clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -q -x

lint: install
	$(BIN)/ruff check pumlc_cli tests bench
	$(BIN)/ruff format --check pumlc_cli tests bench
	$(BIN)/lint-imports

demo: install
	$(BIN)/python -m pumlc_cli.benchmarks.demo $(DEMO_ARGS)

bench: install
	$(BIN)/python bench/prepare.py
	$(BIN)/python bench/eval.py
	$(BIN)/python bench/train_step.py

# make reproduce                          the synth protocol on the CPU (minutes)
# make reproduce DATASET=voc-mini         509 real VOC2007 images, ImageNet MobileNetV2, 5 seeds, CPU (DATA: a VOC devkit)
# make reproduce DATASET=voc2007 DATA=/path/VOCdevkit/VOC2007 GPUS=2 REPRODUCE_ARGS=--train-arg=--pretrained-path=FILE
# SEEDS=0,1,2,3,4 runs every cell once per seed; finished cells are never retrained.
reproduce: install
	$(BIN)/python -m pumlc_cli.benchmarks.reproduce --dataset "$(or $(DATASET),synth)" $(if $(DATA),--data "$(DATA)") \
		$(if $(SEEDS),--seeds "$(SEEDS)") --gpus "$(or $(GPUS),1)" --out "$(or $(OUT),results)" $(REPRODUCE_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
