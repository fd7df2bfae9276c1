"""The scoring service (`evotune serve scorer`) and its client: reward and cost over HTTP."""
