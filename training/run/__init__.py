"""One training run: ``loop`` (the loop every method shares, on a CPU, a GPU or under torchrun), ``checkpoint``
(what a run writes and how a model is rebuilt from it), ``optim``, ``precision``, ``lookahead`` and ``progress``
(the loop's parts), and ``recipes`` (named sets of flag defaults).

It sits above ``data``, ``nets`` and ``methods`` (the loop trains a method's model on a data set), and below
``evaluation`` and ``export``, which read checkpoints and never the loop. The run's plain description,
``training.config``, and which process this is, ``training.ranks``, are one level up because methods read them
too.
"""
