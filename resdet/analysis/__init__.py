"""The paper's evidence as code: degradation study and layer responses."""
