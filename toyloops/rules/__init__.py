"""The rules every layer follows, the core included (errors, checkpoint safety, the batches both
engines see). Importing any of them also silences the warnings the libraries raise about each
other on every documented path, which no user can act on."""

import warnings

# Warnings the libraries raise about each other (Lightning's CLI calls jsonargparse methods that
# jsonargparse deprecates; torch's pytree about Lightning's use of it): nothing a user can act on.
LIBRARY_WARNINGS = (  # (message, module the warning is attributed to)
    (".*isinstance.treespec, LeafSpec", ""),
    (r"\s*(.* was deprecated in v4\.|By default only one JsonargparseDeprecationWarning)", r"lightning\.pytorch\.cli"),
    # Lightning's advice on machines of 3+ cores: toy data are tensors in memory, which a worker
    # process would copy to hand back batches that cost less than the copy.
    (".* does not have many workers which may be a bottleneck", ""),
)


def ignore_library_warnings() -> None:
    for message, module in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)


ignore_library_warnings()
