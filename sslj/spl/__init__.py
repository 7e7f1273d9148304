"""Safe parameter learning (SPL): parameter masks as a pytree parallel to the params."""
