"""Service-type classification of user prompts for the gateway: a static table distilled from MiniLM, word
indicators and logistic regression, in numpy.

``PromptClassifier.load()`` once, then ``classify(prompt_text(request))`` per request; see docs/classifier.md.
"""

from edgecloud.classifier.model import Classification, PromptClassifier
from edgecloud.classifier.request_text import prompt_text

__all__ = ["Classification", "PromptClassifier", "prompt_text"]
