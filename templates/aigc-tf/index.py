"""Entrypoint of the aigc-tf template: gunicorn serves `app` (see template.yml's fprocess)."""

from aigc.runtime.app import create_app

app = create_app("function.handler")
