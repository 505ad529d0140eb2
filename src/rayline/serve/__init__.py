"""Online serving on Ray Serve. The application's import path is rayline.serve.app:app_builder."""
