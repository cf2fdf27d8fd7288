import os

# No network in tests (DESIGN.md section 4).
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "WANDB_MODE": "disabled",
}.items():
    os.environ.setdefault(_key, _value)
