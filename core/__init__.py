"""What every layer shares, framework-free: the standard library and pydantic only (enforced by the
import contracts in .importlinter)."""
