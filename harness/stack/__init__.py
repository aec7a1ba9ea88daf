"""Private, disposable PostgreSQL and RabbitMQ, and the stack of processes built on them."""

from harness.ports import free_port
from harness.stack.postgres import PostgresServer
from harness.stack.procs import StackError, wait_until
from harness.stack.rabbitmq import RabbitServer
from harness.stack.stack import Stack, default_state_dir

__all__ = [
    "PostgresServer",
    "RabbitServer",
    "Stack",
    "StackError",
    "default_state_dir",
    "free_port",
    "wait_until",
]
