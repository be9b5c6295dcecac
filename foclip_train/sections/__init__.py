"""The sections of `foclip reproduce`, one module each; :mod:`foclip_train.sections.registry` lists them."""
