"""SmolLM2-135M's architecture and tokenizer with seeded random bf16 weights, for a GPU machine with
no model hub: `python3 scripts/device/mkmodel.py CONFIG_AND_TOKENIZER_DIR OUT_DIR`."""
import os
import shutil
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM

src, dst = sys.argv[1:]
torch.manual_seed(0)
cfg = AutoConfig.from_pretrained(src)
model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
model.save_pretrained(dst)
for f in os.listdir(src):
    if f != "config.json":
        shutil.copy(os.path.join(src, f), dst)
print("model:", dst, sorted(os.listdir(dst)))
