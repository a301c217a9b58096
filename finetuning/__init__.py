"""Fine-tuning on the Django side: services (writes), selectors (reads), the task body.

The training itself lives in ``inference.engine.training`` (no Django there); this
package stores files, jobs, events, metrics and resulting models, and runs the
engine's loop from a django-tasks worker.
"""

from __future__ import annotations
