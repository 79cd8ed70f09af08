"""Load EudraVigilance ICH E2B(R3) safety reports into a relational database."""
