import Foundation
import Stages

exit(RoleMain.main("coordinator", CommandLine.arguments))
