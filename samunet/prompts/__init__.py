"""Box and point prompts: derived from label maps (prompts/derivation.py), read from the user's JSON file
(prompts/prompt_file.py), mapped from original image coordinates to the model's input (prompts/mapping.py)."""
