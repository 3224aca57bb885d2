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

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[test,plot]'
	touch $@

demo: install
	$(BIN)/drawkit train --dataset mnist --attention filterbank --glimpses 16 --hidden 128 --z-dim 16 \
		--read-size 2 --write-size 5 --batch-size 64 --max-steps 2500 --val-images 2000 --out $(RUN)
	$(BIN)/drawkit sample --checkpoint $(RUN) --n 64 --out $(RUN)/samples.png --gif $(RUN)/generation.gif
	@echo "Pictures are in $(RUN)/: samples.png, generation.gif"

test: install
	$(BIN)/python -m pytest -q || [ $$? -eq 5 ]

clean:
	rm -rf $(VENV) runs build *.egg-info
