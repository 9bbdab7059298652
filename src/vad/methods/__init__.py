"""vad.methods"""
