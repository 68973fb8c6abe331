"""Edge-cloud serving gateway for generative AI, after "Generative AI as a Service in 6G Edge-Cloud"."""

__version__ = "0.1.0"
