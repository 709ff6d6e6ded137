"""What an experiment may ask for, without PyTorch: every defense's and attack's parameter model and recipe
metadata, the combiner names and the CIFAR ResNet shape rules.

Config validation (:mod:`igat.config`), the dashboard's launch form, ``igat submit`` and ``igat defaults`` read
these modules only, so they never load PyTorch (it costs the dashboard process ~465 MB and seconds). The
implementations subclass their spec: ``class ADP(ADPSpec, Defense)`` in :mod:`igat.defenses.adp` inherits the
name, ``Params``, recipe and config checks from :class:`igat.specs.defenses.ADPSpec`, so there is one definition of
each. Adding a defense or an attack is its spec here plus its implementation module; ``tests/test_specs.py``
checks that the two registries name the same things and that nothing here imports torch.

Import the submodules (``igat.specs.defenses``, ``igat.specs.attacks``, ``igat.specs.combiners``,
``igat.specs.architecture``) directly; this package file imports nothing so :mod:`igat.config` can use them
lazily without an import cycle.
"""
