"""EI-CLIP reproducibility kit: data, entity mining, model, training, evaluation and plots.

The method is described in METHOD.md terms throughout; see README.md, section "Method".
"""
import os
import warnings

# The kit never reaches a model hub unless the user asks for downloads (eiclip --allow-downloads).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Without ipywidgets, tqdm.auto falls back to text bars in notebooks, which is what the kit wants
# (executed reports stay plain text); its warning about that is noise in every notebook.
warnings.filterwarnings("ignore", message="IProgress not found")

__version__ = "0.1.0"
