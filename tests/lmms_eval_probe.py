"""Run by .venv-lmms's Python (tests/test_lmms_eval_real.py): load an exported AVBench folder through lmms-eval's own
task manager, as the named model classes would, and print what each class is handed (JSON on the last line).

python tests/lmms_eval_probe.py TASK_FOLDER MODEL_NAME [MODEL_NAME ...]
"""

import json
import sys

from lmms_eval.protocol import ChatMessages
from lmms_eval.tasks import TaskManager, get_task_dict

folder, models = sys.argv[1], sys.argv[2:]
report = {}
for model in models:
    tasks = get_task_dict(["avbench", "avbench_blind"], TaskManager(include_path=folder, model_name=model), "chat")
    for name, task in sorted(tasks.items()):
        doc = task.test_docs()[0]
        messages = ChatMessages(messages=task.doc_to_messages(doc))
        api = messages.to_openai_messages(pass_video_url=True)[0]["content"]  # what the API classes send
        local = messages.to_hf_messages()[0]["content"]  # what the omni and HF chat classes process
        report[f"{model}/{name}"] = {
            "item_id": doc["item_id"],
            "api": [{"type": c["type"], "url": (c.get("audio_url") or c.get("video_url") or {}).get("url", "")[:40]}
                    for c in api],
            "local": [{"type": c["type"], "value": str(c.get(c["type"], ""))} for c in local],
            "visual": task.doc_to_visual(doc),
        }
print(json.dumps(report))
