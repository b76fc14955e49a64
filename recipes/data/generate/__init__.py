"""Generated data: paraphrases of a recipe's rows (augment) and new rows from seed topics
(synthesize), asked of any OpenAI-compatible endpoint, `reg serve`'s gateway among them.

What is generated becomes a data file like any other, which a recipe then names: the spec
hash stays a hash of content and the reconciler never calls a network.

1. :mod:`.plan` (pure) turns the recipe's rows or the topics into tasks with stable keys,
   builds the requests from the templates (:mod:`.templates`), parses answers into rows,
   and selects what to keep: the same cleaning as any data, then duplicates of the
   originals and of each other dropped, each drop counted by reason;
2. :mod:`.client` asks the endpoint with the official ``openai`` client behind a small
   protocol, retrying 429, 5xx and connection errors with exponential backoff (tenacity);
3. :mod:`.journal` appends each batch of answers to ``OUT.partial.jsonl`` in one write, so
   an interrupted run resumes where it stopped;
4. :mod:`.run` runs the tasks still missing, a bounded number at a time, then writes
   ``OUT`` (rows in the recipe's data format) and ``OUT.provenance.json``
   (:mod:`.provenance`: endpoint, model, the versions that answered, template, sampling,
   seed, times, the report) atomically, and removes the partial file.
"""
