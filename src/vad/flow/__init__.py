"""vad.flow"""
