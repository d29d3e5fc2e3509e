"""The dataset viewer (`saven view DATASET`): a static HTML site for reading a dataset the way a researcher would.

``index.html`` lists the videos with dataset-level counts; ``videos/<video_id>.html`` shows one video: its player,
the clip timeline (keyframes, keyframe captions, fused descriptions), the transcript, the audio events as a track,
every QA item with its correct option marked, and the video's dead letters. Other reports link to a QA item with
``video_page_href(video_id, qa_id)``.

Everything that comes from the data (titles, transcripts, captions, questions, dead-letter messages) is text: it is
escaped on the way into the page, and only numbers we format and names made from sanitised ids go into attributes.
The pages carry one inline script, written here, allowed by its hash in a Content-Security-Policy; nothing is
fetched from anywhere but the viewer's and the dataset's own files, so the site works from ``file://`` and offline.
"""

from viewer.html import safe_name, video_page_href
from viewer.pages import VIEW_DIR, write_viewer
from viewer.serve import make_server

__all__ = ["VIEW_DIR", "make_server", "safe_name", "video_page_href", "write_viewer"]
