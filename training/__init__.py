"""oodserve training: data, networks, methods, the training loop, evaluation and ONNX export (needs torch).

The rooms, each importing only those before it: ``data`` (data sets, image files, outliers, noise), ``nets``
(architectures), ``methods`` (one module per training method, and the PGD attack), ``run`` (the loop,
checkpoints, optimisation, recipes), ``evaluation`` (OOD sets, metrics, the evaluation command), ``export``
(checkpoint -> calibrated ONNX file). Beside them: what every room reads, ``config`` (one run as plain data,
every training default) and ``ranks`` (which process this is), and the commands that compose the rooms,
``cli`` and ``__main__`` (``python -m training METHOD``), ``bundled`` (the shipped models) and ``toy2d``.

``python -m training METHOD`` is the one training command. ``python -m training.METHOD`` (``training.acet``,
``training.isomax``, ``training.mcd``: a registered method's name without its ``+``) runs the same command; no
module holds it: the finder below answers those names with a few lines of code that call ``cli.main(METHOD)``,
so a method's command exists as soon as the method is registered, and ``training/acet.py`` never stands
beside ``training/methods/acet.py``. It answers ``training.evaluate``, a second name of the evaluation command
that users' scripts call, by running ``python -m training.evaluation`` and saying so in one line on stderr.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys

# a command's second name, which users' scripts call -> (the command, the module whose ``main`` it is)
SECOND_NAMES = {"evaluate": ("python -m training.evaluation", "training.evaluation.evaluate")}


class CommandAliases(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Answers ``training.NAME`` for a method's command or a command's second name, after every real module: a module
    of that name, were there one, wins."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, name = fullname.rpartition(".")
        if package != __name__ or not name.isidentifier() or self.source(name) is None:
            return None
        command = SECOND_NAMES[name][0] if name in SECOND_NAMES else f"python -m {__name__} {name}"
        return importlib.util.spec_from_loader(fullname, self, origin=command)  # argparse's program name

    def source(self, name: str) -> str | None:
        if name in SECOND_NAMES:
            command, module = SECOND_NAMES[name]
            return (
                f"import sys\n\nfrom {module} import main\n\nif __name__ == '__main__':\n"
                f"    print('note: this command is {command}', file=sys.stderr)\n    main()\n"
            )
        method = method_commands().get(name)
        if method is None:
            return None
        return (
            f"from training.cli import main as _train\n\n\ndef main(argv=None):\n    _train({method!r}, argv)\n\n\n"
            "if __name__ == '__main__':\n    main()\n"
        )

    def get_source(self, fullname):
        return self.source(fullname.rpartition(".")[2])

    def is_package(self, fullname):
        return False


def method_commands() -> dict[str, str]:
    """Module name -> registered method (``isomax`` -> ``isomax+``): each trains with ``python -m training METHOD``."""
    from . import methods  # here, not at the top: importing the package must stay light

    return {name.replace("+", ""): name for name in methods.REGISTRY}


def _install() -> None:
    """Right after the finder of real modules, so a module file wins, and before any finder an editable install
    adds (it would answer ``training.NAME`` from another checkout's files)."""
    if any(isinstance(f, CommandAliases) for f in sys.meta_path):
        return
    after = [i for i, f in enumerate(sys.meta_path) if f is importlib.machinery.PathFinder]
    sys.meta_path.insert(after[0] + 1 if after else len(sys.meta_path), CommandAliases())


_install()
