"""``python -m statemachine``: print the session machine as a Mermaid state diagram."""

from statemachine.machine import mermaid

if __name__ == "__main__":
    print(mermaid())
