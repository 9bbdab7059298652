"""vad.nets"""
