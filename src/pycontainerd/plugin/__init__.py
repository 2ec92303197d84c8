"""Typed plugin registrations and the loader that initialises them in dependency order."""

from .registry import InitContext, Plugin, PluginSet, Registration, SkipPlugin

__all__ = ["InitContext", "Plugin", "PluginSet", "Registration", "SkipPlugin"]
