"""Run configuration, parsed once at the edge into frozen, validated dataclasses.

Flower hands every app a flat mapping of kebab-case keys (``[tool.flwr.app.config]``
in ``pyproject.toml``, overridden by ``flwr run -c`` or ``fedcare simulate`` options).
:meth:`run_config.RunConfig.from_flat` turns that mapping into typed sections and
rejects any unknown key or out-of-range value with one sentence naming the key and
what it accepts. Everything below the edge receives these objects, never raw dicts.

One module per section of the run, each with the choices (enums) its settings take:

- :mod:`.flat`: Flower's flat mapping; how a setting declares its key and how a
  flat value is checked against the setting's type;
- :mod:`.federation`: rounds, deadlines, the aggregation rule;
- :mod:`.server_optimizer`: how the mean update becomes the next global model;
- :mod:`.training`: what each hospital trains and how;
- :mod:`.privacy`: DP-SGD and the evaluation share of the budget;
- :mod:`.secagg`: SecAgg+ and the federation sizes it needs;
- :mod:`.data`: built-in data, partitions and a real federation's contract;
- :mod:`.output`: the run folder;
- :mod:`.run_config`: :class:`~.run_config.RunConfig`, the sections together, with
  the checks that span sections.

Import each name from the module that owns it; this package re-exports nothing.
"""
