"""The launcher's boot directory: ``cutscope run`` puts it first on ``PYTHONPATH``
so that every Python process it starts imports ``sitecustomize`` from here."""
