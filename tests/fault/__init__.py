"""`make fault`: the fault-injection run of build-dataset (issue 9) and the parts it is made of."""
