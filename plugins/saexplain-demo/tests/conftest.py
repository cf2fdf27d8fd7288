import warnings

from saexplain.testing import set_offline_env

set_offline_env()  # before torch / transformers are imported

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", message=".*deprecated.*")

import torch  # noqa: E402

# Tiny models: one thread avoids oversubscribing this 2-core machine (5-10x faster here).
torch.set_num_threads(1)
