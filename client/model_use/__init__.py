"""The trained model in use at a hospital: validation, predictions, explanations, a service.

Everything here runs at the hospital on the hospital's own files; nothing it
computes is sent anywhere.
"""
