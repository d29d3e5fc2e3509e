"""Failures a stage can report. The flow turns each into a ``DeadLetter``; only transient ones are retried."""

from __future__ import annotations

from schemas.records import DeadLetter, utc_now


class StageError(Exception):
    """A failure of one source or item in one stage, with a reason a person can act on.

    ``subject`` is what the stage was working on: the video id once there is one, else (acquisition) the source.
    """

    transient = False

    def __init__(self, stage: str, subject: str, message: str, *, item_id: str | None = None,
                 detail: str = "", error_class: str | None = None, attempts: int = 1):
        super().__init__(f"[{stage}] {subject}: {message}")
        self.stage = str(stage)  # a StageName or an added stage's name
        self.subject = subject
        self.message = message
        self.item_id = item_id
        self.detail = detail
        self.error_class = error_class or type(self).__name__
        self.attempts = attempts  # tries made before giving up; stages that retry set it

    def to_dead_letter(self, attempts: int | None = None, *, source: str | None = None,
                       video_id: str | None = None) -> DeadLetter:
        """A dead letter; without ``source`` the subject is taken as the video id (the flow stamps the source)."""
        return DeadLetter(stage=self.stage, source_id=source, video_id=video_id if source else self.subject,
                          item_id=self.item_id, error_class=self.error_class, message=self.message,
                          attempts=attempts or self.attempts, failed_at=utc_now(), detail=self.detail,
                          transient=self.transient)


class PermanentError(StageError):
    """Retrying cannot help: removed, private, unsupported, too long, not a video, corrupt."""


class TransientError(StageError):
    """May succeed later: HTTP 429/5xx, timeouts, connection resets."""

    transient = True


def dead_letter_from_exception(exc: BaseException, stage: str, video_id: str | None = None, *,
                               source: str | None = None, item_id: str | None = None,
                               attempts: int | None = None) -> DeadLetter:
    """Any exception as a dead letter; a ``StageError`` keeps its own stage, class and message."""
    if isinstance(exc, StageError):
        return exc.to_dead_letter(attempts, source=source, video_id=video_id)
    return DeadLetter(stage=stage, source_id=source, video_id=video_id, item_id=item_id,
                      error_class=type(exc).__name__, message=str(exc) or repr(exc), attempts=attempts or 1,
                      failed_at=utc_now())
