"""Library log lines go to the "vaebias" logger; the CLI sends them to stderr, never stdout."""

import logging

from vaebias._internal.log import configure_cli_logging, get_logger


def test_cli_logging_writes_to_stderr_only(capsys):
    configure_cli_logging(logging.INFO)
    configure_cli_logging(logging.INFO)  # a second call replaces the handler: one line, not two
    get_logger("test").info("hello %d", 7)
    get_logger().debug("hidden at INFO")
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("hello 7") == 1 and "hidden" not in err and err.startswith("[vaebias ")
    configure_cli_logging(logging.WARNING)
    get_logger().info("quiet now")
    assert "quiet now" not in capsys.readouterr().err


def test_cli_logging_does_not_also_go_through_the_root_logger(capsys):
    import sys

    root_handler = logging.StreamHandler(sys.stdout)  # as Ray or a notebook may install one
    logging.getLogger().addHandler(root_handler)
    try:
        configure_cli_logging(logging.INFO)
        get_logger().info("once")
        out, err = capsys.readouterr()
        assert out == "" and err.count("once") == 1
    finally:
        logging.getLogger().removeHandler(root_handler)
