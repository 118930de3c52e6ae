"""The networks: ``models`` (every architecture ``--model`` names, built from a data set's shape) and
``fastnet`` (airbench's network, the fast recipe's). Reads only the ``data`` room (how images become floats)."""
