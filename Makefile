# `make demo`: virtual environment, install, a short MNIST training run, pictures and GIFs.
# `make test`: the test suite. Both work from a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs/demo

# The shared data folder beside the project, when there is one (machines without internet).
SHARED_DATA := $(abspath ../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/MNIST),)
export DRAWKIT_DATA ?= $(SHARED_DATA)
endif

.PHONY: demo test install clean gpu-check

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test,plot,tensorboard]'
	touch $@

demo: install
	$(BIN)/drawkit train --dataset mnist --attention filterbank --glimpses 16 --hidden 128 --z-dim 16 \
		--read-size 5 --write-size 5 --batch-size 64 --max-steps 3000 --val-images 2000 --log-every 100 --out $(RUN)
	$(BIN)/drawkit sample --checkpoint $(RUN) --n 64 --out $(RUN)/samples.png --gif $(RUN)/generation.gif
	$(BIN)/drawkit visualize-attention --checkpoint $(RUN) --n 8 --out $(RUN)/attention.gif --strip $(RUN)/attention_strip.png
	$(BIN)/drawkit visualize-attention --checkpoint $(RUN) --generate --n 8 --out $(RUN)/generation_boxes.gif
	$(BIN)/drawkit reconstruct --checkpoint $(RUN) --n 16 --out $(RUN)/reconstructions.png
	@echo "Pictures in $(RUN)/: samples.png generation.gif attention.gif attention_strip.png generation_boxes.gif reconstructions.png curves.png"

test: install
	$(BIN)/python -m pytest -q

# `make gpu-check`: every GPU check in one run (about 8 minutes) into gpu-check/report.md and report.json;
# `make gpu-check DEVICE=cpu`: the same steps at tiny sizes. Uses the Python that has drawkit installed:
# the venv's when there is one, else $(PYTHON) (a GPU machine with drawkit installed by pip).
DEVICE ?= cuda
GPU_CHECK_PYTHON := $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))

gpu-check:
	$(GPU_CHECK_PYTHON) scripts/gpu_check.py --device $(DEVICE) --out gpu-check

clean:
	rm -rf $(VENV) runs build *.egg-info
