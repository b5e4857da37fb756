"""Slack: for now only its part of the config file (:mod:`adapters.chat.slack.config`)."""
