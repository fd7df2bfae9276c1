"""The scoring service (`evotune serve scorer`): reward and cost over HTTP. Its client is `tasks.scorer_client`."""
