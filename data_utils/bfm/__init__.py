"""Basel Face Model 2009 support: installer (`download_bfm.sh`), torch model and the "bfm" tracker."""
