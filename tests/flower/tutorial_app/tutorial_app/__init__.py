"""A tutorial-style Flower App (its own model) driven by FlexMoEStrategy."""
