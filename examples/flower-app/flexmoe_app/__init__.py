"""flexmoe as a Flower App: the components are flexmoe's own (``flexmoe.flower``)."""
